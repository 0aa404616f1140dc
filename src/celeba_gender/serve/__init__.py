"""What a finished run is used through: the export, predictions on photos, TTA, Grad-CAM."""
