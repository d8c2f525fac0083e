"""Dead letters, the messages that cannot be stored: their record and object names (`record`),
the store holding those objects, S3 or a directory (`store`, with its S3 client `s3`), and the
guard rail that stops when most recent messages would be dead letters (`guard`).
"""
