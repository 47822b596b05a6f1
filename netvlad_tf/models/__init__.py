"""The place-recognition model (backbone → pooling → whitening), its ranking loss, presets,
frozen-trunk split and model-file loading."""
