"""Devices and sharding: one mesh object made here reaches every jitted step.

* :mod:`lsc.parallel.mesh` -- the ``data x fsdp x tensor`` device mesh from a config's ``mesh``
  section.
* :mod:`lsc.parallel.partitioning` -- logical axis rules -> ``PartitionSpec`` / ``NamedSharding``,
  sharded initialisation and state placement.
* :mod:`lsc.parallel.distributed` -- multi-process start-up (``jax.distributed.initialize``) from
  the config's ``parallel`` section or the launch scripts' environment.
"""
