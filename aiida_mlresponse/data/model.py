"""`ModelData`: a trained model file (ml/checkpoint.py format) as a node, loadable in any process."""

from __future__ import annotations

import pathlib
import tempfile

from aiida import orm


class ModelData(orm.SinglefileData):
    """A checkpoint written by `aiida_mlresponse.ml.checkpoint.save`, with its kind and hyperparameters.

    Loading never unpickles code (`torch.load(weights_only=True)`), so a model node from an archive
    of unknown origin is safe to open.
    """

    @classmethod
    def from_checkpoint(cls, path) -> 'ModelData':
        from aiida_mlresponse.ml import checkpoint

        payload = checkpoint.read(path)
        node = cls(file=pathlib.Path(path).resolve())
        node.base.attributes.set('kind', payload['kind'])
        node.base.attributes.set('hyperparameters', payload['hyperparameters'])
        node.base.attributes.set('metadata', payload.get('metadata', {}))
        return node

    @property
    def kind(self) -> str:
        return self.base.attributes.get('kind')

    @property
    def hyperparameters(self) -> dict:
        return self.base.attributes.get('hyperparameters')

    def load(self):
        """(torch module in eval mode, checkpoint dict)."""
        from aiida_mlresponse.ml import checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / self.filename
            path.write_bytes(self.get_content(mode='rb'))
            return checkpoint.load(path)
