package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/clusterwall/clusterwall/internal/controller"
	"github.com/clusterwall/clusterwall/internal/policy"
)

func controllerCommands() []*cobra.Command {
	var (
		kubeconfig, policyName, tokenFile, tags, leNS, metricsAddr, probeAddr string
		daemons                                                               []string
		leaderElect, ingress                                                  bool
		gatewayAPI                                                            string
		resync                                                                time.Duration
	)
	cmd := &cobra.Command{
		Use:   "controller --daemon URL",
		Short: "Reconcile FirewallPolicy / RuleCollectionGroup objects, Services and Pods into the daemons, and Ingresses / HTTPRoutes into their WAF",
		Long: `Run the Kubernetes controller (docs/kubernetes.md). It watches the
clusterwall.io FirewallPolicy named --firewall-policy, the RuleCollectionGroups
that join it, LoadBalancer Services annotated clusterwall.io/publish, and Pods
and EndpointSlices for sourceSelectors; composes one policy; and applies it to
every --daemon through the admin API (POST /v1/apply) when it changed. As the
ingress controller (--ingress, the default) it also turns Ingresses of its
IngressClass and HTTPRoutes of its Gateways into routes of the daemons' WAF (PUT
/v1/waf/kubernetes). It runs in the cluster (in-cluster config) or next to the
firewall (--kubeconfig).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
			ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))
			if len(daemons) == 0 {
				return &exitError{code: 2, msg: "clusterwall controller: at least one --daemon URL is required"}
			}
			var token string
			if tokenFile != "" {
				data, err := os.ReadFile(tokenFile)
				if err != nil {
					return &exitError{code: 1, msg: fmt.Sprintf("clusterwall controller: token: %v", err)}
				}
				token = strings.TrimSpace(string(data))
			}
			var cfg *rest.Config
			var err error
			if kubeconfig != "" {
				cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
			} else {
				cfg, err = ctrl.GetConfig()
			}
			if err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("clusterwall controller: kubeconfig: %v", err)}
			}
			scheme, err := controller.NewScheme()
			if err != nil {
				return err
			}
			opts := ctrl.Options{
				Scheme:                  scheme,
				Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
				HealthProbeBindAddress:  probeAddr,
				LeaderElection:          leaderElect,
				LeaderElectionID:        "clusterwall-controller",
				LeaderElectionNamespace: leNS,
			}
			if ingress {
				opts.Cache = controller.IngressCacheOptions()
			}
			mgr, err := ctrl.NewManager(cfg, opts)
			if err != nil {
				return fmt.Errorf("clusterwall controller: %w", err)
			}
			if probeAddr != "0" && probeAddr != "" {
				mgr.AddHealthzCheck("ping", healthz.Ping)
				mgr.AddReadyzCheck("ping", healthz.Ping)
			}
			r := controller.New(mgr.GetClient(), mgr.GetEventRecorderFor("clusterwall-controller"), controller.Options{
				PolicyName:    policyName,
				Daemons:       daemons,
				Token:         token,
				PolicyOptions: policy.Options{ServiceTagsFile: tags},
				Resync:        resync,
			})
			if err := r.SetupWithManager(mgr); err != nil {
				return fmt.Errorf("clusterwall controller: %w", err)
			}
			gw := false
			if ingress {
				switch gatewayAPI {
				case "auto":
					gw = controller.GatewayAPIInstalled(mgr)
				case "true":
					if gw = controller.GatewayAPIInstalled(mgr); !gw {
						return &exitError{code: 1, msg: "clusterwall controller: --gateway-api=true but the cluster does not serve the Gateway API (gateway.networking.k8s.io v1 GatewayClass, Gateway, HTTPRoute; v1beta1 ReferenceGrant)"}
					}
				case "false":
				default:
					return &exitError{code: 2, msg: "clusterwall controller: --gateway-api must be auto, true or false"}
				}
				ir := controller.NewIngress(mgr.GetClient(), mgr.GetEventRecorderFor("clusterwall-ingress"), controller.IngressOptions{
					PolicyName: policyName, Daemons: daemons, Token: token, Resync: resync, GatewayAPI: gw,
				})
				if err := ir.SetupWithManager(mgr); err != nil {
					return fmt.Errorf("clusterwall controller: %w", err)
				}
			}
			log.Info("controller starting", "firewallPolicy", policyName, "daemons", daemons, "leaderElection", leaderElect, "ingress", ingress, "gatewayAPI", gw)
			return mgr.Start(ctrl.SetupSignalHandler())
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&policyName, "firewall-policy", controller.DefaultFirewallPolicyName, "name of the FirewallPolicy to program")
	f.StringArrayVar(&daemons, "daemon", nil, "admin API base URL of a daemon, e.g. http://10.42.2.4:9180 (repeatable)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the admin API bearer token")
	f.StringVar(&tags, "service-tags", "", "service tags file (the same as the daemons') for validation")
	f.BoolVar(&leaderElect, "leader-elect", false, "elect a leader (for more than one replica)")
	f.StringVar(&leNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's namespace)")
	f.StringVar(&metricsAddr, "metrics-bind-address", "0", "address of the controller's metrics endpoint (0 disables)")
	f.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz (0 disables)")
	f.DurationVar(&resync, "resync", time.Minute, "how often to check that each daemon still runs the applied policy")
	f.BoolVar(&ingress, "ingress", true, "also be the ingress controller: Ingresses of class clusterwall.io/ingress-controller (and HTTPRoutes, with the Gateway API) become WAF routes")
	f.StringVar(&gatewayAPI, "gateway-api", "auto", "watch the Gateway API: auto (when its CRDs are installed), true or false")
	return []*cobra.Command{cmd}
}
