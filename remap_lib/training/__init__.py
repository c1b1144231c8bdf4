"""Training: profiles, the trainer, augmentation, fine-tuning and the training sets."""
