"""OpenAI's Batch API guide, step by step, against nightowl.

Written from OpenAI's Batch API documentation; only where the client points changes
(base_url, api_key), and max_tokens: the guide asks for 1000, more than the tiny bootstrap
models' 256 positions hold, so it is MAX_TOKENS here (default 64). The request bodies name
MODEL: a registered model such as tiny-generator, or the guide's gpt-3.5-turbo-0125 once you
give a model that name (`nightowl models add gpt-3.5-turbo-0125 --kind generate --source DIR`).

    nightowl up                      # in one shell: its last line (stdout) is the API key
    nightowl models bootstrap        # in another, with the same NIGHTOWL_HOME
    MODEL=tiny-generator OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=nk-... \\
        python examples/openai_batch.py

With a real checkpoint registered, MAX_TOKENS=1000 runs the guide's own requests.
"""

import json
import os
import time

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ["OPENAI_API_KEY"],
)
MODEL = os.environ.get("MODEL", "gpt-3.5-turbo-0125")
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "64"))

# 1. Prepare your batch file: one request per line.
requests = [
    {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": MODEL,
              "messages": [{"role": "system", "content": "You are a helpful assistant."},
                           {"role": "user", "content": "Hello world!"}],
              "max_tokens": MAX_TOKENS}},
    {"custom_id": "request-2", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": MODEL,
              "messages": [{"role": "system", "content": "You are an unhelpful assistant."},
                           {"role": "user", "content": "Hello world!"}],
              "max_tokens": MAX_TOKENS}},
]
with open("batchinput.jsonl", "w") as f:
    for request in requests:
        f.write(json.dumps(request) + "\n")

# 2. Upload your batch input file.
batch_input_file = client.files.create(file=open("batchinput.jsonl", "rb"),  # noqa: SIM115
                                       purpose="batch")
print(batch_input_file)

# 3. Create the batch.
batch = client.batches.create(
    input_file_id=batch_input_file.id,
    endpoint="/v1/chat/completions",
    completion_window="24h",
    metadata={"description": "nightly eval job"},
)
print(batch)

# 4. Check the status of the batch until it is done.
while batch.status not in ("completed", "failed", "expired", "cancelled"):
    time.sleep(2)
    batch = client.batches.retrieve(batch.id)
    print(batch.status, batch.request_counts)

# 5. Retrieve the results.
if batch.output_file_id:
    file_response = client.files.content(batch.output_file_id)
    print(file_response.text)
if batch.error_file_id:
    print(client.files.content(batch.error_file_id).text)
if batch.errors:
    print(batch.errors)

# 6. List all batches.
for b in client.batches.list(limit=10):
    print(b.id, b.status, b.created_at)
