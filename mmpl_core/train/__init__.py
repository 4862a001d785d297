"""Teacher-forcing training with attention masks derived from segment layouts."""
