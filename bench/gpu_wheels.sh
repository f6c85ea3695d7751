#!/usr/bin/env bash
# Fill .whl/ with the wheels nightowl needs that the GPU machine lacks, for its Python 3.12.
#
# The GPU machine cannot reach a registry, and it has its own torch, transformers, tokenizers,
# accelerate, peft and CUDA: those must not travel (a second torch would shadow its CUDA one).
# What travels is the rest of nightowl's dependency closure, at the versions this checkout's
# venv runs (so the GPU run uses what the tests here use), as Python 3.12 manylinux wheels.
#
#     bench/gpu_wheels.sh            # writes .whl/ (ignored by git), prints what it fetched
#     PYTHON=/path/to/python bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/work/main/.venv/bin/python}
OUT=.whl
rm -rf "$OUT"
mkdir -p "$OUT"

# The machine's own packages (its image, read 2026-11-17): never carried.
THERE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
build certifi charset-normalizer click cloudpickle colorama contourpy cycler filelock fonttools
frozenlist fsspec h11 hf-xet httpcore httpx huggingface-hub idna jinja2 joblib kiwisolver
markdown markdown-it-py markupsafe matplotlib mdurl mpmath msgpack multidict networkx numpy
packaging pandas peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil
pyarrow pygments pyparsing python-dateutil pyyaml regex requests rich sacrebleu safetensors
scipy setuptools six sympy tabulate tokenizers torch tqdm transformers triton typer
typing-extensions urllib3 uvloop werkzeug wheel wrapt xxhash yarl zipp lxml numba llvmlite"

# nightowl's runtime closure as this venv resolves it, minus what is there, as name==version.
mapfile -t WANT < <("$PYTHON" - "$THERE" <<'EOF'
import re
import sys
from importlib import metadata

there = {n.lower() for n in sys.argv[1].split()}
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
seen: set[str] = set()
todo = ["nightowl"]
while todo:
    name = norm(todo.pop())
    if name in seen:
        continue
    seen.add(name)
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    for req in dist.requires or []:
        head, _, marker = req.partition(";")
        # Extras are optional features (tests, docs), except the ones nightowl names itself.
        if "extra ==" in marker and not re.search(r"extra == .(redis|binary).", marker):
            continue
        if "python_version <" in marker and "3.12" not in marker:
            continue
        todo.append(re.split(r"[\s\[<>=!~;(]", head.strip(), maxsplit=1)[0])
for name in sorted(seen - {"nightowl"}):
    if name in there or name.startswith(("nvidia-", "torch")):
        continue
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
EOF
)

PLATFORMS=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
for spec in "${WANT[@]}"; do
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$OUT" "$spec" \
    2> >(grep -v "is ignored: it is neither" >&2)
done

# nightowl itself: its folders api/ tasks/ workers/ migrations/ import as nightowl_api, ...,
# names an install gives them, so the workers the GPU run starts need nightowl installed too.
"$PYTHON" -m pip wheel -q --no-deps -w "$OUT" . 2> >(grep -v "is ignored: it is neither" >&2)

# One version of each name, or the install there stops: check before anything travels.
dupes=$(ls "$OUT" | sed -E 's/-[0-9][^-]*-.*//' | tr 'A-Z_.' 'a-z--' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "two versions of: $dupes" >&2
  exit 1
fi
echo "$(ls "$OUT" | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT:"
ls "$OUT"
