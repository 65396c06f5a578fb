"""Banner clustering (spec 002): dedupe banner image embeddings, choose a k-means clustering by
silhouette and advertiser-purity metrics, store it, assign clusters to new banners (batch and
Serve), and turn the clusters into per-user features and per-cluster analytics.

Modules: ``schema`` (columns, table names), ``config``, ``synthetic`` (planted generator),
``digits`` (scikit-learn's handwritten digits as banners), ``dedupe``, ``metrics`` (spec 002's
advertiser metrics), ``sweep`` (PCA + k-means over a K grid on Ray), ``model`` (centres + PCA,
registry), ``predict`` (Ray Data batch job), ``features`` (user cluster counts, analytics),
``serve`` (the cluster-assignment route), ``commands`` (``python -m app banners <verb>``).
"""
