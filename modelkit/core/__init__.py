"""The Keras model core: reference architectures, data sets, training, search, distribution.

Custom Keras objects: modules named by MODELKIT_IMPORTS are imported by keras_io.load_keras before any
.keras file is loaded, in every modelkit process (conversion children inherit the variable). See
modelkit.core.custom.
"""
