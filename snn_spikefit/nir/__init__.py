"""NIR in and out: the layer mapping shared by both directions, the exporter and the importer."""
