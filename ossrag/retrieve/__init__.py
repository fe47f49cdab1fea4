"""Stage 5, retrieve: a question to ranked passages: mode and fusion policy, the cross-lingual
rewrite, reranking, neighbour merging, explanations. Interface: `retriever.Retriever`."""
