"""OpenAI's API on top of jobs: batches, their lines, background validation, output files,
direct requests, chat prompts and the model list."""
