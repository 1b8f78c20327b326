"""Networks: classifiers (condition C, encoder E), generators G, discriminator D, DAEs."""
