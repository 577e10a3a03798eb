"""Data: images as the models take them, the built-in datasets, the readers of your own folders,
arrays and torchvision datasets, and streaming for data larger than memory."""
