"""The Open Inference Protocol's models: torchlab's stateless operations, one model each."""
