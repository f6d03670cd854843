"""Generated protobuf modules of Thanos' StoreAPI / InfoAPI (see ``../generate.py``); do not edit
the ``*_pb2.py`` files by hand."""
