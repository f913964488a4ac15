from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import RedirectView

from panel.health import healthz
from panel.metrics import metrics
from web.views import account, audit, cluster

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("", RedirectView.as_view(pattern_name="nodes:list", permanent=False)),
    path("accounts/login/", login_not_required(auth_views.LoginView.as_view()), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("nodes/", include("web.urls")),
    path("", include("web.data.urls")),
    path("audit/", audit.audit_list, name="audit"),
    path("audit/alerts/", audit.audit_alerts, name="audit_alerts"),
    path("cluster/banner/", cluster.cluster_banner, name="cluster_banner"),
    path("account/tokens/", account.tokens, name="account_tokens"),
    path("api/v1/", include("api.urls")),
]
