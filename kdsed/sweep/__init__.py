"""The distributed sweep: Ray Train units in parallel, Ray Tune post-processing, MLflow coordinator."""
