"""The data stage, in the order data flows: download (get the files) -> items (list, label, split) ->
images (decode, presize) -> block (DataBlock, the datasets and loaders) -> summary and show (look at it)."""
