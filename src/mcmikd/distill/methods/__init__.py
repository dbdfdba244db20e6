"""One module per distillation framework; each defines its Distiller subclass and its pure loss function."""
