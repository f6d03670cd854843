"""One module per parser of untrusted bytes. Each defines ``test_one_input(data: bytes) -> None``,
which calls what production calls on such bytes and lets only a finding escape: the error types
production catches (and turns into a message naming the place) are caught in the target itself, so
any other exception, a crash, a sanitizer report or a hang is a bug."""

TARGETS = (
    "xor_chunk",
    "aggr_chunk",
    "chunk_segment",
    "index",
    "tombstones",
    "meta_json",
    "frames",
    "transcode",
    "remote_read",
    "remote_write",
    "jsonfmt",
    "head",
    "hist_chunk",
)
