"""Reading .keras files, the one Keras I/O that conversion, the runtime and training all need (training lives in
modelkit.core; nothing here imports it).

- files: load a .keras safely (archive and config checks first), its Signature, calling a model.
- inputs: a subclassed model's inputs from its saved build shapes, or from `--input-spec`.
- custom: the user's modules that register custom Keras objects (MODELKIT_IMPORTS, `--import`), imported
  before any .keras file is loaded, in every modelkit process (children inherit the variable).
"""
