"""Fine-tune Hugging Face text classifiers with Optuna search, MLflow tracking and a registered champion."""
