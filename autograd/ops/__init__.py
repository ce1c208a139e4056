"""The primitive ops, grouped by kind. Each is a Function (forward + backward on raw arrays)
with a small wrapper function that takes Tensors; `autograd.functional` re-exports the wrappers."""
