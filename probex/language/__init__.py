"""Weights meet language: text encoders, prompt search and the atlas of models and words.

:mod:`~probex.language.text` (``load_text_encoder``: one factory; prompts for class names and
the bundled MiniLM), :mod:`~probex.language.openclip` (open_clip text towers),
:mod:`~probex.language.text_cache` (embeddings kept on disk), :mod:`~probex.language.search`
(``ModelIndex``: a prompt to ranked models, a model to its top labels, neighbours) and
:mod:`~probex.language.atlas` (a UMAP map of models and class names in one space).
"""
