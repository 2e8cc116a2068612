"""Detection stage: YOLO training/validation per fusion method, comparison, pipeline and demo."""
