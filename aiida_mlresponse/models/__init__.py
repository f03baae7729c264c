"""AiiDA side of the machine-learned models: model node, training CalcJob and its parser, inference."""
