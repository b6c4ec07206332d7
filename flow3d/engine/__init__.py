"""The training engine: typed recipes, the head protocol, Lightning training, checkpoints.

- :mod:`~flow3d.engine.config`: ``load_recipe(path, overrides)`` -> :class:`Recipe`
- :mod:`~flow3d.engine.head`: :class:`Head`, what a domain implements
- :mod:`~flow3d.engine.heads`: ``HEADS`` name -> class, ``get_head(name)``
- :mod:`~flow3d.engine.train`: ``train(recipe, resume=None | "auto" | path) -> Path``
- :mod:`~flow3d.engine.checkpoint`: ``load_model(path) -> LoadedModel`` (``flow3d.load``)
- :mod:`~flow3d.engine.flow`: a recipe's ``flow:`` section as core objects (for heads)
- :mod:`~flow3d.engine.reflow`: teacher pairs and training on them, for any head

Submodules are imported on use, so ``import flow3d.engine`` does not import Lightning.
"""
