"""lsc: transforming and combining rewards for aligning language models.

Data flows one way: config -> data -> models -> train / align -> eval -> report
(``configs/`` and :mod:`lsc.config`, :mod:`lsc.data`, :mod:`lsc.models`, :mod:`lsc.train` /
:mod:`lsc.align`, :mod:`lsc.eval`; :mod:`lsc.repro` runs them all as the main job).
:mod:`lsc.rewards` holds the paper's math and its vocabulary of method and reference names, and
depends on nothing but jax. ``docs/architecture.md`` says where each thing lives and where to add
a reward method, a model, an RL algorithm or a claim.
"""

__version__ = "0.1.0"
