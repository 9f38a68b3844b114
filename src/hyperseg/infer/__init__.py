"""Using a trained model on images, folders and videos."""
