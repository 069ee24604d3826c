"""lsc: transforming and combining rewards for aligning language models.

Data flows one way: config -> data -> models -> train / align -> eval -> report.
`lsc.rewards` holds the paper's math and depends on nothing but jax.
"""

__version__ = "0.1.0"
