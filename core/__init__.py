"""The bottom layer every other package may import: the user-facing error type and the one image opener."""
