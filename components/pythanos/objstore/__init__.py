"""Object storage: Thanos objstore YAML, S3 (minio) and FILESYSTEM buckets."""
