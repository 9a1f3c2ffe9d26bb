"""Export stage: fold a trained model into the integer network a hardware config allows, and write it as NIR."""
