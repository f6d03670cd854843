"""Build hook for the native kernels; metadata lives in pyproject.toml."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pythanos.tsdb._xor",
            sources=["components/pythanos/tsdb/_xor.c"],
            # Baseline x86-64/arm64 code (no -march=native: the wheel/image must run anywhere).
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.tsdb._series",
            sources=["components/pythanos/tsdb/_series.c"],
            depends=["components/pythanos/_crc32c.h"],  # the one CRC-32C of the kernels
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.tsdb._wal",
            sources=["components/pythanos/tsdb/_wal.c"],
            depends=["components/pythanos/_crc32c.h"],  # the one CRC-32C of the kernels
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.tsdb._downsample",
            sources=["components/pythanos/tsdb/_downsample.c"],
            # -ffp-contract=off: aggregates must round exactly like Go (no fused multiply-add).
            extra_compile_args=["-O3", "-std=c99", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.tsdb._head",
            sources=["components/pythanos/tsdb/_head.c"],
            # -ffp-contract=off: computeChunkEndTime's float arithmetic must round as Go's.
            extra_compile_args=["-O3", "-std=gnu99", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.tsdb._histchunk",
            sources=["components/pythanos/tsdb/_histchunk.c"],
            # -ffp-contract=off: computeChunkEndTime's float arithmetic must round as Go's.
            extra_compile_args=["-O3", "-std=gnu99", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.tsdb._indexenc",
            sources=["components/pythanos/tsdb/_indexenc.c"],
            depends=["components/pythanos/_crc32c.h"],  # the one CRC-32C of the kernels
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.storeapi._transcode",
            sources=["components/pythanos/storeapi/_transcode.c"],
            depends=["components/pythanos/_crc32c.h"],
            extra_compile_args=["-O3", "-std=gnu99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.dedup._dedup",
            sources=["components/pythanos/dedup/_dedup.c"],
            # -ffp-contract=off: the counter adjustment must round exactly like Go (no fused multiply-add).
            extra_compile_args=["-O3", "-std=c99", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.promql._topk",
            sources=["components/pythanos/promql/_topk.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.promql._rate",
            sources=["components/pythanos/promql/_rate.c"],
            # -ffp-contract=off: extrapolatedRate must round as Go's (no fused multiply-add).
            extra_compile_args=["-O3", "-std=c99", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.promql._jsonfmt",
            sources=["components/pythanos/promql/_jsonfmt.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.store._answer",
            sources=["components/pythanos/store/_answer.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.remote._rwdecode",
            sources=["components/pythanos/remote/_rwdecode.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "pythanos.query._frames",
            sources=["components/pythanos/query/_frames.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ],
)
