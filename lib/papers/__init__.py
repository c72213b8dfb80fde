"""One module per chapter, named after its notebook (``notebooks/one-pixel-attack.ipynb`` ->
``repro.papers.one_pixel_attack``): the code only that chapter needs. A chapter module may import
``repro.core``, ``repro.nn``, ``repro.data`` and ``repro.methods``, never another chapter's module and
never ``repro.tools``.
"""
