"""Champion and challenger: two calibrators scored on the same fresh feedback, decided online."""
