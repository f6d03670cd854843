"""Regenerate the checked-in protobuf modules in ``pb/`` from the ``.proto`` files next to them.

Run from anywhere (needs ``grpcio-tools`` in the environment; it is not needed at run time)::

    python components/pythanos/storeapi/generate.py      # or: make proto

The include root is ``components/``, and every ``.proto`` imports its siblings as
``pythanos/storeapi/pb/<name>.proto``, so protoc writes package-absolute imports
(``from pythanos.storeapi.pb import labels_pb2``) and registers descriptors under file names
that cannot clash with other protos in the process (e.g. the remote-read ``prompb`` ones).
Only ``*_pb2.py`` (+ ``.pyi``) are generated: the gRPC method handlers and stubs are written
by hand in :mod:`pythanos.storeapi.service` with the full method paths spelled out, which
keeps the run-time dependency to ``grpcio`` + ``protobuf`` (no grpcio-tools version pin).
"""
from __future__ import annotations

import sys
from pathlib import Path

PB = Path(__file__).resolve().parent / "pb"
ROOT = PB.parents[2]  # components/
PROTOS = ["labels.proto", "types.proto", "rpc.proto", "info.proto", "hints.proto", "prompb.proto", "write.proto",
          "exemplars.proto", "rules.proto"]
# The checked-in modules were written by this grpcio-tools (its bundled protoc); another version
# writes a different runtime-version check, so `make proto` pins it.
GRPCIO_TOOLS_VERSION = "1.85.1"


def main() -> int:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        print("grpcio-tools is needed to regenerate: pip install grpcio-tools", file=sys.stderr)
        return 1
    from importlib.metadata import version

    if version("grpcio-tools") != GRPCIO_TOOLS_VERSION:
        print(f"warning: grpcio-tools {version('grpcio-tools')} is not the pinned {GRPCIO_TOOLS_VERSION}: "
              "the output will differ from the checked-in modules", file=sys.stderr)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    rel = [str((PB / p).relative_to(ROOT)) for p in PROTOS]
    args = ["protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={ROOT}", f"--pyi_out={ROOT}", *rel]
    rc = protoc.main(args)
    if rc != 0:
        print(f"protoc failed ({rc}): {' '.join(args)}", file=sys.stderr)
        return rc
    print(f"generated {len(rel)} modules in {PB}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
