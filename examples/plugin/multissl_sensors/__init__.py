"""multissl-sensors: an example multissl plugin: a sensor time-series domain (`SensorDomain`, domain=sensors), the
spectral contrastive loss (`SpectralContrastive`, objective=spectral_contrastive) and a 1-D CNN encoder
(`Conv1dEncoder`, encoder=conv1d), found by multissl through this package's entry points."""
