// placeholder so the workspace loads while the load engine is being written
