"""Lightning parts of the recipes: the detection LightningModule and LightningDataModule."""
