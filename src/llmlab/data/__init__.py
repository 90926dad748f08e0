"""The data package: loaders for the data sets the sprints train on (MNIST from sprint 02)."""
