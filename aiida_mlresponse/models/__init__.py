"""AiiDA side of the machine-learned models: the training CalcJob and its parser (`calculation`), inference
with provenance (`inference`). The model node is `data.model.ModelData`; the models themselves are in `ml/`."""
