"""Data preparation: turn raw labelled faces into a clean, split, balanced, cached dataset."""
