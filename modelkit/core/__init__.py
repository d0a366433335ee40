"""The Keras model core: data sets, reference architectures (zoo), training, search, distribution.

Reading .keras files (safety checks, signatures, user modules with custom objects) is modelkit.keras_io,
which conversion and the runtime use without importing training.
"""
