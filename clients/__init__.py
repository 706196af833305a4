"""Thin clients of the kfusion server: microphone/file streamer and the browser page."""
