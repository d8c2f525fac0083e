"""`tailpipe run`: one consumer replica, Kafka -> PostgreSQL.

The process and its signals (`serve`), the poll loop and its hand-off (`consumer`), the single
writer that stores batches and sorts their failures (`storing`), where each partition is read
from as partitions come and go (`rebalance`), the offsets per partition (`positions`), why
partitions are paused (`pauses`), what is failing since when (`outages`), the replica's look at
itself (`watch`), its status port (`status`) and its Prometheus metrics (`metrics`).
"""
