"""Configuration: the schemas (torch-free), their registration and validation."""
