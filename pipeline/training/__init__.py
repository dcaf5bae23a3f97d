"""One training: TrainingArguments from conf/trainer (`args`, with `precision`), the tokenizer and the model's
init (`model`), the pipeline's Trainer with FGM (`trainer`), the order of its batches (`sampling`), its scores
(`metrics`), and transformers' private API in one place (`internals`)."""
