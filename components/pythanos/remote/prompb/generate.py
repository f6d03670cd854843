"""Regenerate the checked-in ``*_pb2.py`` from the ``.proto`` files beside this script.

    .venv/bin/python -m pythanos.remote.prompb.generate

Needs ``grpcio-tools`` (a development tool only; the generated code needs just ``protobuf``).
The proto root is ``components/`` so the generated imports are absolute
(``from pythanos.remote.prompb import types_pb2``) and the descriptor file names
(``pythanos/remote/prompb/*.proto``) cannot clash with other packages' protos.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent  # components/
FILES = ["types.proto", "remote.proto", "write_v2.proto"]


def main() -> int:
    from grpc_tools import protoc  # imported here: a dev-only dependency

    rel = [str((HERE / f).relative_to(ROOT)) for f in FILES]
    args = ["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--pyi_out={ROOT}", *rel]
    rc = protoc.main(args)
    if rc != 0:
        print(f"protoc failed ({rc}): {' '.join(args)}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
