"""What the labels are: one softmax class, or one sigmoid per attribute."""
