"""Where bytes live: the artifact store (a folder or S3), each host's content-addressed cache,
uploaded files, a fine-tune's inputs and checkpoints."""
