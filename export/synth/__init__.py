"""Synthetic phoneme-timed speech + landmark corpus (`kfusion synth`): text, festival TTS, visemes, face model."""
