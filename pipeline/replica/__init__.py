"""`tailpipe run`: one consumer replica, Kafka -> PostgreSQL.

The process and its signals (`serve`), the poll loop and its single writer (`consumer`), the
offsets per partition (`positions`), why partitions are paused (`pauses`), what is failing since
when (`outages`), the replica's look at itself (`watch`), its status port (`status`) and its
Prometheus metrics (`metrics`).
"""
