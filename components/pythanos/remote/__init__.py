"""Prometheus' remote protocols: our ``prompb`` protos (package ``prometheus``) and the remote-read client."""
from .client import (  # noqa: F401
    DEFAULT_CHUNKED_READ_LIMIT,
    REMOTE_READ_VERSION,
    SAMPLES,
    STREAMED_CONTENT_TYPE,
    STREAMED_XOR_CHUNKS,
    FrameError,
    RemoteReadClient,
    RemoteReadError,
    RemoteSeries,
    encode_read_request,
    iter_frames,
    parse_chunked_stream,
    samples_to_xor_chunks,
    to_prompb_matchers,
)
